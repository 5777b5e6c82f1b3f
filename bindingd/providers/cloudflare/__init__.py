"""The `cloudflare` connection kind: a Cloudflare account reached through bindingd's proxy
Worker (worker/proxy.js), one signed HTTP request per binding call."""
