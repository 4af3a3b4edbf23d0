"""``python -m surgewatch.cli``: the same as the ``surgewatch`` command."""
from surgewatch.cli.main import main

main()
