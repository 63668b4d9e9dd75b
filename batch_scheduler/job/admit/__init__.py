"""The admission stage: whether the next batch may go now.

It owns the decision to send (`admission`: a free slot, no hold, room under the cost cap, room in the
provider's queue), a job's view of the provider's queues and what each batch weighs (`queues`), the
queue budget shared by every job of the process (`queue_budget`), the limit learned by asking the
provider (`queue_limit`), and a chunk sent as several parts when one batch would not fit (`parts`).
"""
