"""Jobs: one set of task definitions, run by Procrastinate workers or inside the server's process."""
