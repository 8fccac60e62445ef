"""Table contracts (`schemas.tables`: Spark schemas), input validation (`schemas.validate`) and the limits of an
input row (`schemas.limits`)."""
