"""Events: every change stored, then published; notifications; event streams.

- :mod:`.bus`: :class:`EventBus`, events recorded in a change's transaction and
  published when it commits, to bounded subscriber queues.
- :mod:`.notify`: :class:`Notifier`, notifications (events of their recipient)
  and their mail.
- :mod:`.streams`: what the server-sent-events and WebSocket streams share:
  filters, who may see what, replay.
"""
