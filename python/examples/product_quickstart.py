# A notebook cell written for the hosted product's SDK, as its documentation
# shows it (create, follow events, list, cancel, get). Only the import line
# differs; tests run it against a real `hone serve` (cmd/hone python_sdk_test.go).
from hone import foundation_model as fm  # was: from databricks.model_training import foundation_model as fm

import time

run = fm.create(
    model='meta-llama/Llama-3.2-3B-Instruct',
    train_data_path='dbfs:/Volumes/main/mydirectory/ift/train.jsonl',  # UC Volume with JSONL formatted data
    register_to='main.mydirectory',  # UC catalog and schema to register the model to
)
print(run)

# Follow the run's events until it ends.
seen = 0
while True:
    events = run.get_events()
    for event in events[seen:]:
        print(event.time, event.type, event.message)
    seen = len(events)
    run = fm.get(run)
    if run.status in ('COMPLETED', 'FAILED', 'STOPPED'):
        break
    time.sleep(1)
for event in fm.get_events(run)[seen:]:
    print(event.time, event.type, event.message)
print('finished', run.name, run.status, run.completed_at)
assert run.status == 'COMPLETED', run.error

fm.list()
# filtering example
print(fm.list(before='2023-01-01', limit=50))
print(fm.list(limit=5))

# Start a second run and cancel it.
second = fm.create(
    model='meta-llama/Llama-3.2-3B-Instruct',
    train_data_path='dbfs:/Volumes/main/mydirectory/ift/train.jsonl',
    register_to='main.mydirectory',
    training_duration='10ep',
)
fm.cancel(second)
runs_to_cancel = [second.name]
fm.cancel(runs=runs_to_cancel)

print(fm.get(run.name))
print(fm.get(second.name).status)
