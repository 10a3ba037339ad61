"""The benchmark suite (`make bench`, `python -m bench`): load generator, scenarios, report.

Owns everything that measures the system from outside: starting the six services
in a namespace of their own, seeding users and groups through the public API,
driving load from several client processes (asyncio + aiohttp, 127.0.0.1 only),
reading CPU and memory from /proc, and printing one table plus
bench/results/latest.json. Nothing here is imported by the services.
"""
