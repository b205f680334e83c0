from ticketing_orders.main import main

main()
