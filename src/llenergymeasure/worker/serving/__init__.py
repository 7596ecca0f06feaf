"""Server mode (issue 15): the backend's own OpenAI-compatible server under a controlled load."""
