"""`python -m mptcplab.cli`: the mptcplab command."""
from . import main

main()
