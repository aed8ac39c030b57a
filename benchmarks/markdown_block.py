"""Replace one generated block of a Markdown file, between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``, atomically (a stopped run never leaves half a file)."""

import os
import re
import tempfile


def replace_block(path, name, block):
    """Put ``block`` (which carries its own markers) where the ``name`` block is in ``path``;
    append it when the file has no such block, create the file when there is none."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path) or ".", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
