"""Formatting only: text, JSON, Markdown and DOT views of analysis results."""
