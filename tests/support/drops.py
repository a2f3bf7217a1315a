"""A mapped drop of orders as the tests write it: the mapping file's text."""

ORDERS_MAPPING = """
tables:
  orders:
    file: orders.csv
    columns: {order_id: OrderRef, line_number: Line, order_time: CreatedAt, customer_id: Buyer,
              product_id: Sku, quantity: Qty, unit_price: Price, is_cancellation: Cancelled}
"""
