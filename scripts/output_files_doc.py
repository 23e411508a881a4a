"""Regenerate the generated parts of docs/output-files.md from the output-file registry, the
run record's schema and the comparison's columns (ensemble_eval/outputs.py, schema.py,
records.py, comparison.py).

    python scripts/output_files_doc.py           # rewrite the page
    python scripts/output_files_doc.py --check   # exit 1 when the page is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ensemble_eval import comparison
from ensemble_eval.schema import with_generated_doc

PAGE = Path(__file__).resolve().parent.parent / "docs" / "output-files.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = comparison.with_generated_doc(with_generated_doc(page))
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run python scripts/output_files_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
