"""The README's content pipeline: one writer agent, a linear workflow, one task whose
description has `{topic}` and `{length}` placeholders, filled from the run's input_data.

    python3 examples/content_pipeline.py --topic "AI in Healthcare" --length "1000 words"
"""

from __future__ import annotations

from crew_client import Client, TaskSpec, agent_fields, finish, main, parser


def run() -> int:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--topic", default="AI in Healthcare")
    parse.add_argument("--length", default="1000 words")
    args = parse.parse_args()
    client = Client(args.base_url)
    writer = client.ensure_agent(
        "Content Writer",
        **agent_fields(args, role="Content Creator", goal="Create engaging content"),
    )
    workflow = client.ensure_workflow(
        "Content Pipeline", description="Automated content creation", workflow_type="linear"
    )
    client.ensure_tasks(
        workflow["id"],
        {"writer": writer["id"]},
        [
            TaskSpec(
                name="Write Article",
                description="Write a blog article about {topic}, {length}",
                agent="writer",
            )
        ],
    )
    inputs = {"topic": args.topic, "length": args.length}
    return finish(client.run(workflow["id"], inputs, args.timeout))


if __name__ == "__main__":
    main(run)
