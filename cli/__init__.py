"""The ``hybridize`` command line (installed as the import package ``hybridize_cli``)."""
