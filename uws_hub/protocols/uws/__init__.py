"""IVOA UWS 1.1 (Universal Worker Service) for batch jobs, served by uws-hub.

Any UWS 1.1 client (pyvo's ``AsyncTAPJob`` and ``parse_job_list`` above
all) drives the hub's batch jobs: one job list per batch job type, under
``/hub/api/uws/{job-type}``. A facade: the batch jobs' service owns every
rule (parameters, launch checks, quotas, the queue, stops, deletion); this
package translates.

- :mod:`.documents`: the XML documents (job, job list, results,
  parameters) from plain values, in the schema's order;
- :mod:`.phases`: UWS phases from uws-hub's job statuses;
- :mod:`.forms`: the parameters clients send (case-insensitive names, job
  control parameters, blocking and list filters);
- :mod:`.base`: HTTP Basic beside the hub's tokens, and UWS's error answers.
"""
