"""The adapter to the `mcp` SDK's server kernel: hosting a server and its lifespan, driving its
runner, and the dispatcher that feeds it requests."""
