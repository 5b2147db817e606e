"""``gsr test`` / ``python -m gsr.test``: BasicSR's ``test_pipeline`` behind gsr's option checks."""
import sys
from typing import List, Optional

from gsr.train import run


def main(argv: Optional[List[str]] = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, is_train=False)


if __name__ == '__main__':
    from gsr.cli import main as cli_main
    sys.exit(cli_main(['test'] + sys.argv[1:]))
