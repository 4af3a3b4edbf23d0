"""``python -m surgewatch``: the same as the ``surgewatch`` command."""
from surgewatch.cli.main import main

main()
