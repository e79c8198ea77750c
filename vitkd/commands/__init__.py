"""One module per ``vitkd`` subcommand (see :data:`vitkd.cli.COMMANDS`), each with ``main(argv, prog)``.

``scripts/<command>.py`` in a source checkout call the same ``main``.
"""
