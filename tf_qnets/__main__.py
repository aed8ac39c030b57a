"""``python -m tf_qnets ...`` is the ``tf-qnets`` command (export, inspect)."""

from tf_qnets.cli import main

raise SystemExit(main())
