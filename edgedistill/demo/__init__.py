"""Embedded defaults: shipped text and tiny teachers that build offline in seconds."""
