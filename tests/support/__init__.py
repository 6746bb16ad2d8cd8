"""What the tests share: event factories, waits, harnesses for the processes
and servers they start. No tests here, and nothing here imports a test module;
fixtures stay in conftest.py."""
