"""The project's library: what the jobs compute, in packages named after their concern."""
