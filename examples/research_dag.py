"""A parallel research workflow: two research tasks run at the same time, then an editor's task
that depends on both turns their notes into one brief.

    python3 examples/research_dag.py --subject "solid-state batteries"
"""

from __future__ import annotations

from crew_client import Client, TaskSpec, agent_fields, finish, main, parser


def run() -> int:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--subject", default="solid-state batteries")
    args = parse.parse_args()
    client = Client(args.base_url)
    analyst = client.ensure_agent(
        "Research Analyst",
        **agent_fields(
            args,
            role="Research Analyst",
            goal="Find accurate, current facts and cite where they come from",
            backstory="A careful analyst who separates what is known from what is claimed.",
        ),
    )
    editor = client.ensure_agent(
        "Brief Editor",
        **agent_fields(
            args,
            role="Editor",
            goal="Turn research notes into a short brief a busy reader can act on",
        ),
    )
    workflow = client.ensure_workflow(
        "Research Brief",
        description="Two research tasks in parallel, then one brief from both",
        workflow_type="parallel",
        config={"max_parallel": 2},
    )
    client.ensure_tasks(
        workflow["id"],
        {"analyst": analyst["id"], "editor": editor["id"]},
        [
            TaskSpec(
                name="Market research",
                description="Research the market for {subject}: size, growth, main players.",
                agent="analyst",
            ),
            TaskSpec(
                name="Technology research",
                description="Research the technology of {subject}: how it works, its limits, "
                "what is expected next.",
                agent="analyst",
            ),
            TaskSpec(
                name="Write brief",
                description="Write a one-page brief on {subject} from the two research notes.",
                agent="editor",
                depends_on=["Market research", "Technology research"],
            ),
        ],
    )
    return finish(client.run(workflow["id"], {"subject": args.subject}, args.timeout))


if __name__ == "__main__":
    main(run)
