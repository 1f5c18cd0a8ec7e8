"""EXECUTOR=queue: API processes enqueue execution ids on a taskiq broker (Redis Streams or
RabbitMQ) and `crew-platform worker` processes consume them, each running its executions with the
same dispatcher, runner and heartbeat as an in-process server. taskiq is imported only here, and
only in queue mode."""
