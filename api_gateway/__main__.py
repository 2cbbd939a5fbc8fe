from core.http import serve
from core.settings import get_settings

serve("api_gateway.main:create_app", get_settings())
