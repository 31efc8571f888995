"""Sub-commands of the ``bclib`` console command, one module each (see ``bclib.run.cli``)."""
