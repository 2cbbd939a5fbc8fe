from core.http import serve
from core.settings import get_settings

serve("worker_service.main:create_app", get_settings())
