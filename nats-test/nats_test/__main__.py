"""`python -m nats_test publish SUBJECT PAYLOAD` | `python -m nats_test listen [SUBJECT ...]`."""

from nats_test.cli import main

main()
