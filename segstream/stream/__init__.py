"""The online half: a Faust worker that keeps each user's segment current from Kafka events.

Sub-packages, each importing only those listed before it (a unit test enforces the direction):

- :mod:`.domain`: pure rules (events and validation, change planning, dead letters, topics);
- :mod:`.clients`: the one factory of Kafka and Redis clients, and the retry policy;
- :mod:`.kafka` and :mod:`.state`: Kafka I/O, and per-user state in Redis;
- :mod:`.drift`: drift mode's shared centres;
- :mod:`.worker`: the Faust app, batching, the batch processor, the model holder, run;
- :mod:`.http` and :mod:`.lifecycle`: the HTTP side, and replay / reassign / verify / namespace;
- :mod:`.service` joins the worker and the HTTP side; :mod:`.main` holds the module-level app
  for ``faust -A segstream.stream.main:app worker``.
"""
