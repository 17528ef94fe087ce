"""Optional sub-commands, one module each (``run(args)``, ``add_arguments(parser)``, ``HELP``);
``docs_reference.py`` is the docs command's generator, not a command of its own."""
