"""Shared persistence for bertqueue: settings, SQL schema, sessions, job state and the queue client.

Imported by both ``web`` and ``worker``; it must never import Flask or torch.
"""
