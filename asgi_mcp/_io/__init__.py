"""The anyio plumbing both eras share: the running loop's services, writing to an ASGI response,
keep-alive and the watch over long exchanges."""
