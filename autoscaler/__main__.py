from core.http import serve
from core.settings import get_settings

serve("autoscaler.main:create_app", get_settings())
