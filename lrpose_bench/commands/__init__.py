"""Optional sub-commands, one module each (``run(args)``, ``add_arguments(parser)``, ``HELP``)."""
