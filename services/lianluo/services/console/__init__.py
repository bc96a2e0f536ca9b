"""The web console: the agent desk, the supervisor wall and the tenant console in the browser.
A backend-for-frontend over the cell's gRPC APIs, acting with the signed-in person's own token."""
