"""Entry points (``python -m experiments.<name>``). Importing the package hides TensorFlow's
and XLA's native info and warning lines unless the command line has ``--verbosity``
(``usvjax.reporting.console``); it runs before either library loads."""
import sys

from usvjax.reporting import console

console.quiet_native(sys.argv)
