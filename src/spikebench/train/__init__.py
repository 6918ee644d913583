"""The training loop, run directories, seeding and memory measurement."""
