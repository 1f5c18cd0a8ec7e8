"""The tools API: every tool an agent may name (`/api/v1/tools`) and MCP servers
(`/api/v1/mcp-servers`); the tools themselves live in `crew_platform.tools`."""
