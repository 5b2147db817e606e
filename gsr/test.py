"""``gsr test`` / ``python -m gsr.test``: BasicSR's ``test_pipeline`` behind gsr's option checks."""
import sys
from typing import List, Optional

from gsr.train import run
from gsr.utils.errors import GsrError


def main(argv: Optional[List[str]] = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, is_train=False)


if __name__ == '__main__':
    try:
        sys.exit(main())
    except GsrError as e:
        print(f'gsr: error: {e}', file=sys.stderr)
        sys.exit(2)
