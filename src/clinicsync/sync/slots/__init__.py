"""A clinic's schedule as its PMS's own slots, each with a capacity (see ``service``)."""
