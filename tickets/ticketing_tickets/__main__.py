from ticketing_tickets.main import main

main()
