"""The adapter to the `mcp` SDK's server kernel: hosting a server and its lifespan, driving its runner
garbage-free, and the request-context pieces both eras share."""
