"""Tools an agent may call: built-ins, HTTP tools users define, and tools of MCP servers.

The engine sees only `Toolbox` (`tools/base.py`): which tools a set of names resolves to, and a
call by name that returns text or raises `ToolError`. It does not know which kind it calls.
"""
