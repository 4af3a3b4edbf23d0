"""The ``surgewatch`` command line: :mod:`.main` holds the typer app and the operational commands,
:mod:`.reports` the digest and review commands."""
