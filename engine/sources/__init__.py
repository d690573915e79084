"""Workspace sources: where a workspace's files come from (a folder, a git repository)."""
