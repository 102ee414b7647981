"""Protocol facades: other APIs translated to uws-hub's services.

One module or small package per protocol (the HuBMAP-compatible API, IVOA UWS
1.1), each a set of thin handlers plus a pure translation module. They hold no
rules of their own: authorization, quotas, limits and events are the services'.
"""
