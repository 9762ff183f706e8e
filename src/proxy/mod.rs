//! The agents' MCP endpoint: arrives with the tools issue.
