"""The kernel's own MPTCP selftests, run by the lab beside its own cases.

`simult_flows.py` knows the output and the cases of
tools/testing/selftests/net/mptcp/simult_flows.sh (pure: parsing, the budget
formula, which lab scenario each case matches); `build.py` extracts and
compiles its programs from a Debian `linux-source` release or a user's tree.
"""
