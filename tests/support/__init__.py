"""What the tests share besides fixtures: servers and their configuration, messages, metrics, load.

`tests/conftest.py` holds the fixtures and nothing else; a test imports a helper from here,
never from `conftest.py` or from another test module.
"""
