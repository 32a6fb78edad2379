"""The local cluster without Docker: real servers and the shop processes on loopback.

``python -m devstack up`` runs it for a developer (fixed, well-known ports, data
kept under ``.devstack/``); the test suite uses the same code with free ports
and throwaway data directories (see ``tests/conftest.py``).
"""
