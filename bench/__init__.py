"""Benchmarks of the platform against CrewAI, LangGraph and the bare OpenAI SDK (`make bench`).

Everything runs on this machine against the local LLM stub, so the model's time is known
exactly and whatever a contender spends above it is that contender's overhead.
"""
