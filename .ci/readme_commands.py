"""Print the README's set-up command marked ``<!-- ci:NAME -->`` (the fenced block right after it).

.ci/run executes exactly these, so the README and CI cannot drift apart.
Usage: python .ci/readme_commands.py install|test|main
"""

import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
name = sys.argv[1]
match = re.search(rf"<!-- ci:{re.escape(name)} -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
if not match:
    sys.exit(f"README.md has no '<!-- ci:{name} -->' fenced command block")
print(match.group(1).strip())
