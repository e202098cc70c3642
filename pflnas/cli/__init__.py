"""The ``pflnas`` command line: one module per subcommand; library packages never import this one."""
