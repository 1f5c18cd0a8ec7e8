"""Tasks that say what a good answer looks like (`expected_output`), with placeholders in their
descriptions and expected outputs filled from input_data: the run's first, then the task's own
(here the report task's `audience`, which `--audience` overrides).

    python3 examples/report_with_expected_output.py --company "Acme Corp" --quarter "Q3 2026"
"""

from __future__ import annotations

from typing import Any

from crew_client import Client, TaskSpec, agent_fields, finish, main, parser


def run() -> int:
    parse = parser(__doc__.splitlines()[0])
    parse.add_argument("--company", default="Acme Corp")
    parse.add_argument("--quarter", default="Q3 2026")
    parse.add_argument("--words", default="300", help="length of the report in words")
    parse.add_argument("--audience", help="who reads the report (default: the task's own)")
    args = parse.parse_args()
    client = Client(args.base_url)
    analyst = client.ensure_agent(
        "Financial Analyst",
        **agent_fields(
            args,
            role="Financial Analyst",
            goal="Extract the facts that matter from a company's quarter",
        ),
    )
    writer = client.ensure_agent(
        "Report Writer",
        **agent_fields(args, role="Business Writer", goal="Write clear, well-structured reports"),
    )
    workflow = client.ensure_workflow(
        "Quarterly Report",
        description="Facts first, then a report shaped by expected_output",
        workflow_type="linear",
    )
    client.ensure_tasks(
        workflow["id"],
        {"analyst": analyst["id"], "writer": writer["id"]},
        [
            TaskSpec(
                name="Collect facts",
                description="List the most important facts about {company} in {quarter}.",
                expected_output="A numbered list of five facts about {company}, one sentence each.",
                agent="analyst",
                order=1,
            ),
            TaskSpec(
                name="Write report",
                description="Write a report on {company} in {quarter} for {audience}, "
                "using the facts collected.",
                expected_output="A {words}-word report with a title, three sections and a "
                "one-line summary.",
                agent="writer",
                order=2,
                input_data={"audience": "the board of directors"},
            ),
        ],
    )
    inputs: dict[str, Any] = {"company": args.company, "quarter": args.quarter, "words": args.words}
    if args.audience:
        inputs["audience"] = args.audience
    return finish(client.run(workflow["id"], inputs, args.timeout))


if __name__ == "__main__":
    main(run)
